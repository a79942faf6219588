"""zeroserve.serving"""
