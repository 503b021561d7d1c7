"""The public border: the request gate and its limits, the server's secrets, a visitor's Hub repository read as
data.
"""
