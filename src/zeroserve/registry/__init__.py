"""zeroserve.registry"""
