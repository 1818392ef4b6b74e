"""Task definitions: real data sets, bundled synthetic tasks, user tasks, metrics (numpy / sklearn / liac-arff)."""
