"""Run the sample API with ``python -m analytics_assets.sample_api``."""

from analytics_assets.sample_api.server import main

if __name__ == "__main__":
    main()
