"""Developer tools: the embedded stack, example traffic, the demo and the benchmark.
Nothing outside dev/ (but the CLI) imports from here."""
