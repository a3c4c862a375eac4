"""Tools for testing and benchmarking alpagasus itself (not needed to use it): see faultproxy."""
