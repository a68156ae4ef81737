"""Spend caps: the Budget layer, its cost model and prices, calendar windows and ledgers."""
