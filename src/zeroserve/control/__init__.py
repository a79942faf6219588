"""zeroserve.control"""
