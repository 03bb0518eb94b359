"""Speech recognition with CTC: spoken digit strings synthesised by eSpeak NG, held-out voices,
bidirectional RNN/GRU/LSTM recognisers, PocketSphinx as the baseline."""
