// loader tests: filled in below
