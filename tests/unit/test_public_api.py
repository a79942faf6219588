import zeroserve


def test_all_is_sorted_and_complete() -> None:
    assert zeroserve.__all__ == sorted(zeroserve.__all__)
    for name in zeroserve.__all__:
        assert hasattr(zeroserve, name), name
