"""log-shipper: ship BOSH VM logs to Elasticsearch without losing or duplicating a line."""

__version__ = "0.1.0"
