"""A team stack on real servers, started from pip packages: `tunegate stack up`."""
