"""zeroserve.backends"""
