-- Density (issue 16): the agents' network of each agent; see
-- migrations/sqlite/0006_agent_networks.sql.
ALTER TABLE agents ADD COLUMN network TEXT;
CREATE INDEX agents_network ON agents (network);
