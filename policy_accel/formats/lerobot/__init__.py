"""LeRobot policy folders (pretrained_model/): reader, normaliser, RGB encoder and feature names."""
