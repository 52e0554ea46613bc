"""Serve fitted R models from AWS Lambda through an embedded R (rpy2).

One noun per module: ``errors`` (HTTP error classes), ``settings``
(configuration from the environment), ``rsession`` (the embedded R, the only
module that imports rpy2), ``prototype`` (what a model accepts, and
validation), ``model`` (a loaded R model), ``store`` (where models live),
``s3reader`` (the cold start's one S3 GET without botocore), ``events``
(event shapes in and out), ``app`` (routes), ``coldstart`` (Lambda's init,
R's start beside the imports and the download), ``local`` (the local HTTP
server).
"""

__version__ = "0.1.0"
