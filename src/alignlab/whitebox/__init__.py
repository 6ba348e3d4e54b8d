"""Looking inside models and training: monitors that hook into training, and model surgery (steering)."""
