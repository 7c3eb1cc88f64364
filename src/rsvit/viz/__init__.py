"""Figures and display helpers, one module per task family plus shared palettes and image display.

Matplotlib is imported only inside the functions that draw, so importing these modules stays cheap.
"""
