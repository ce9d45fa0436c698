# Stand-in for Slicer's extension config generation and CPack setup: nothing is packaged here.
