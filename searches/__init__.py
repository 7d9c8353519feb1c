"""What we look at: events, event classes, observables, statistics and search methods."""
