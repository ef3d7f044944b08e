"""The night staff's web dashboard (``cscs dashboard``)."""
