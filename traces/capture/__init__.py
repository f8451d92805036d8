"""traces/capture"""
