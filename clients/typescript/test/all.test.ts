/**
 * The Node tests, in one process so they share one real service (its embedded PostgreSQL start
 * is the slowest part of a run): the executor API's client, then the tenant API's.
 */
import "./executor.js";
import "./tenant.js";
