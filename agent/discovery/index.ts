/**
 * Endpoint discovery: where peers can reach us and how our NAT maps, from STUN
 * answers to probes sent on the tunnel's port. The entry point of the area:
 * the sans-I/O core (createEndpointDiscovery) and the pure classification
 * and candidate helpers it is built from. docs/endpoint-discovery.md.
 */
export {
  BLOCKED_RETRY_MS, createEndpointDiscovery, REDISCOVER_MS, REFLEXIVE_KEEP_MS, STUN_RETRANSMIT_MS, STUN_ROUND_TIMEOUT_MS,
  type DiscoveryAction, type DiscoveryEvent, type DiscoveryObservation, type DiscoveryOptions, type DiscoveryReason,
  type DiscoveryResult, type EndpointDiscovery,
} from './discovery.js';
export { candidateEndpoints, classifyMapping, type MappingClassification, type MappingObservation } from './classify.js';
