"""zeroserve.gateway"""
