"""Built-in channel plugins (``marlmesh.channels``): ``none`` and ``broadcast``."""
