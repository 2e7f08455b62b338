"""Datasets: tiny format-faithful generators, preparation and validation. No Airflow here."""
