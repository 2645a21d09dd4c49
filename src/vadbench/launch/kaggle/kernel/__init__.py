"""What runs inside a Kaggle kernel: the machine banner, the project layout over /kaggle/input, inputs fetched and
verified, the shard's runs under a deadline. It never calls the Kaggle API."""
