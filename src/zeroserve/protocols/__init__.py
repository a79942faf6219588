"""Request and response codecs with no I/O: the JSON route and Open Inference Protocol v2.

Used by the gateway, the job workers and the client alike, so they sit below all three.
"""
