"""One-to-many melody generation: event-level RNN, GRU and LSTM language models on music21's
corpus (Bach chorale soprano lines, Essen folk songs), with n-gram baselines."""
