"""Maps messages from physical devices onto logical devices."""
