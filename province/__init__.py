"""The provincial tier (DESIGN §8): the federation of city hubs."""
