"""Temperature forecasting on Seattle weather (issue 12): regression with uncertainty."""
