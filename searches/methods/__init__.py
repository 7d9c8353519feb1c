"""Analysis methods, each behind the :class:`searches.methods.base.SearchMethod` protocol."""
