"""zeroserve.jobs"""
