"""Generated wire code (make proto). Never edit by hand."""
