"""Feature code: pure transformations of products (text cleaning, image loading)."""
