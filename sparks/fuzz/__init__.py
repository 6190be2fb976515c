"""File fuzzing: seeded mutators of ``.sparks`` files and checkpoints (:mod:`sparks.fuzz.mutate`) and a harness
that loads each mutated file in a subprocess under an address-space limit and a timeout
(:mod:`sparks.fuzz.harness`). Run ``python -m sparks.fuzz --help``; docs/reliability.md lists what it shows."""
