"""zeroserve.monitor"""
