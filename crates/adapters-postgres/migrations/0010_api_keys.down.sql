DROP FUNCTION memlayer_find_api_key(text);
DROP TABLE api_keys;
