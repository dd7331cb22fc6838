"""dlt sources, in the verified-sources layout."""
