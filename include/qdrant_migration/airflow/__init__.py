"""The only code that imports Airflow: the hook, the operators and the task bodies.

Everything else in the package is plain Python that runs and is tested without Airflow.
"""
