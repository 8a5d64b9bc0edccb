# Moving-average crossover: hold the coin while the fast average of closes is above the slow one.
#
# CONFIG (all optional):
#   market          "BTCUSDT"   market to trade (CoinDCX name, as in get_markets())
#   interval        "1m"        candle interval
#   fast, slow      10, 30      window lengths, in candles
#   order_notional  100         value of each buy, in the quote coin (USDT for BTCUSDT)
# Runs on the paper exchange out of the box; set allowed_markets / max_order_notional in CONFIG to
# constrain it on a live account.
# The names CONFIG, STATE, pd, np, client, log and RESULT are provided by the executor.
# ruff: noqa: F821
import math

market = CONFIG.get("market", "BTCUSDT")
interval = CONFIG.get("interval", "1m")
fast = int(CONFIG.get("fast", 10))
slow = int(CONFIG.get("slow", 30))
order_notional = float(CONFIG.get("order_notional", 100))

details = None
for item in client.get_markets_details():
    if item["coindcx_name"] == market:
        details = item
if details is None:
    raise ValueError("unknown market " + market)
pair = details["pair"]
coin = details["target_currency_short_name"]
quantity_digits = int(details["target_currency_precision"])


def floor_to(value, digits):
    scale = 10**digits
    return math.floor(value * scale) / scale


candles = pd.DataFrame(client.get_candles(pair, interval, limit=slow + 2)).sort_values("time")
closes = candles["close"].astype(float)
fast_ma = closes.rolling(fast).mean()
slow_ma = closes.rolling(slow).mean()
price = float(closes.iloc[-1])
above_now = bool(fast_ma.iloc[-1] > slow_ma.iloc[-1])
above_before = bool(fast_ma.iloc[-2] > slow_ma.iloc[-2])

holding = 0.0
for balance in client.get_balances():
    if balance["currency"] == coin:
        holding = float(balance["balance"])
holding = floor_to(holding, quantity_digits)

action = "hold"
if above_now and not above_before and holding == 0:
    quantity = floor_to(order_notional / price, quantity_digits)
    order = client.create_order("buy", "market_order", market, quantity)
    action = "bought " + str(order["total_quantity"]) + " at " + str(order["avg_price"])
elif not above_now and above_before and holding > 0:
    order = client.create_order("sell", "market_order", market, holding)
    action = "sold " + str(order["total_quantity"]) + " at " + str(order["avg_price"])

STATE["runs"] = STATE.get("runs", 0) + 1
if action != "hold":
    STATE["trades"] = STATE.get("trades", 0) + 1
log(
    market,
    price,
    "fast",
    round(float(fast_ma.iloc[-1]), 2),
    "slow",
    round(float(slow_ma.iloc[-1]), 2),
    action,
)
RESULT = {
    "price": price,
    "fast_ma": float(fast_ma.iloc[-1]),
    "slow_ma": float(slow_ma.iloc[-1]),
    "trend": "up" if above_now else "down",
    "action": action,
    "holding": holding,
}
