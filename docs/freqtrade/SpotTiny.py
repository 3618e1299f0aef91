"""A strategy that only exercises the exchange: it wants a trade on every pair all the time
and takes a small profit (minimal_roi) or a small loss (the stop, kept on the exchange as a
STOP_LOSS_LIMIT order). docs/freqtrade/README.md runs it against Spot."""

from freqtrade.strategy import IStrategy
from pandas import DataFrame


class SpotTiny(IStrategy):
    INTERFACE_VERSION = 3
    timeframe = "1m"
    can_short = False
    minimal_roi = {"0": 0.002}
    stoploss = -0.01
    process_only_new_candles = True
    startup_candle_count = 0

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        return dataframe

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe.loc[:, "enter_long"] = 1
        return dataframe

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe.loc[:, "exit_long"] = 0
        return dataframe
