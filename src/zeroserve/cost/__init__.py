"""zeroserve.cost"""
