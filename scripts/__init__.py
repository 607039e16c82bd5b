"""Scripts run from the repository (``python -m scripts.<name>``), outside the code
location: ``trades_db`` builds the example database, ``demo`` runs the demo."""
