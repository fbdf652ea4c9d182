"""traffic: the pure domain of the traffic-camera risk pipeline (no Celery, Flask or env reads)."""

__version__ = "0.1.0"
