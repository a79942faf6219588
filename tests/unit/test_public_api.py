import types

import zeroserve


def test_all_is_sorted_and_complete() -> None:
    assert zeroserve.__all__ == sorted(zeroserve.__all__)
    for name in zeroserve.__all__:
        assert hasattr(zeroserve, name), name
    public = {
        name
        for name, value in vars(zeroserve).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    } | set(zeroserve._LAZY)
    assert public - set(zeroserve.__all__) == set(), "exported but missing from __all__"


def test_client_is_public() -> None:
    from zeroserve.client import Client

    assert zeroserve.Client is Client
