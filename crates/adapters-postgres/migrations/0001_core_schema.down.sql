-- Children first; the policies go with their tables.
DROP TABLE agent_state;
DROP TABLE messages;
DROP TABLE threads;
DROP FUNCTION memlayer_tenant_admits(text);
