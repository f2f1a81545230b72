"""Process entry points: the engine, the controller and the nanny.

Standard library and pyzmq only at import time (engines and nannies start from
here, so nothing heavy may load before they serve).
"""
