"""zeroserve.cli"""
