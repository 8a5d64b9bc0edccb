# RSI mean reversion: buy when the market looks oversold, sell the position when it looks overbought.
#
# CONFIG (all optional):
#   market          "ETHUSDT"   market to trade
#   interval        "5m"        candle interval
#   period          14          RSI period, in candles
#   oversold        30          buy below this RSI
#   overbought      70          sell above this RSI
#   order_notional  100         value of each buy, in the quote coin
# The names CONFIG, STATE, pd, np, client, log and RESULT are provided by the executor.
# ruff: noqa: F821
import math

market = CONFIG.get("market", "ETHUSDT")
interval = CONFIG.get("interval", "5m")
period = int(CONFIG.get("period", 14))
oversold = float(CONFIG.get("oversold", 30))
overbought = float(CONFIG.get("overbought", 70))
order_notional = float(CONFIG.get("order_notional", 100))

details = None
for item in client.get_markets_details():
    if item["coindcx_name"] == market:
        details = item
if details is None:
    raise ValueError("unknown market " + market)
coin = details["target_currency_short_name"]
quantity_digits = int(details["target_currency_precision"])


def floor_to(value, digits):
    scale = 10**digits
    return math.floor(value * scale) / scale


def rsi(closes, length):
    # Wilder's RSI: exponentially smoothed average gains over average losses.
    change = closes.diff()
    gains = change.clip(lower=0).ewm(alpha=1 / length, adjust=False).mean()
    losses = (-change).clip(lower=0).ewm(alpha=1 / length, adjust=False).mean()
    strength = gains / losses.replace(0, np.nan)
    return (100 - 100 / (1 + strength)).fillna(100)


candles = pd.DataFrame(client.get_candles(details["pair"], interval, limit=period * 5)).sort_values("time")
closes = candles["close"].astype(float)
value = float(rsi(closes, period).iloc[-1])
price = float(closes.iloc[-1])

def held():
    for balance in client.get_balances():
        if balance["currency"] == coin:
            return floor_to(float(balance["balance"]), quantity_digits)
    return 0.0


holding = held()

action = "wait"
if value < oversold and holding == 0:
    quantity = floor_to(order_notional / price, quantity_digits)
    if quantity > 0:
        order = client.create_order("buy", "market_order", market, quantity)
        STATE["entry_price"] = order["avg_price"]
        action = "buy"
elif value > overbought and holding > 0:
    order = client.create_order("sell", "market_order", market, holding)
    entry = STATE.get("entry_price")
    if entry:
        STATE["realized_pct"] = STATE.get("realized_pct", 0.0) + (order["avg_price"] / entry - 1) * 100
    STATE["entry_price"] = None
    action = "sell"

if action != "wait":
    holding = held()  # RESULT reports the position this run leaves, not the one it found
log(market, "RSI", round(value, 1), "price", price, action)
RESULT = {"rsi": round(value, 2), "price": price, "action": action, "holding": holding}
