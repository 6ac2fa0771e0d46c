"""Former home of the dataset readers, kept as an alias: import from :mod:`samkit.data.readers`."""
from samkit.data.readers import *  # noqa: F403
from samkit.data.readers import __all__  # noqa: F401
