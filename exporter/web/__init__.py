"""The exporter's HTTP service: Flask app factory and blueprints."""
