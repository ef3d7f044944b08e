"""The OCS side: the operators' command line, status and watch tools."""
