//! Local inference (llama.cpp, candle): arrives with the engine issue.
